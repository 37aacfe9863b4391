"""Generate the sample batch and its GBK catalogue from text this project owns.

    python samples/make_samples.py            # writes samples/batch/ and samples/catalogue.csv

The output is committed; re-running it reproduces the same files (fixed random seed).
The page renderer is also used by the tests to make pages of known skew and orientation.
"""

from __future__ import annotations

import csv
import io
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

HERE = Path(__file__).resolve().parent
FONT = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"
FONT_BOLD = "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc"
FACE = {"simp": 2, "trad": 3}  # face index in the Noto CJK collection: SC, TC

TEXTS = {
    "application": (
        "人身保险投保单",
        [
            "投保人声明：本人已认真阅读并理解保险条款，特别是责任免除条款的内容，自愿投保本保险。",
            "被保险人健康告知：被保险人近五年内未曾因疾病住院治疗，未患有高血压、糖尿病等慢性疾病。",
            "保险期间为二十年，交费方式为年交，首期保险费已通过银行转账方式支付至保险公司指定账户。",
            "受益人指定为被保险人的配偶，受益比例为百分之百，如受益人先于被保险人身故，由法定继承人受益。",
            "业务员已向投保人说明犹豫期的起算日期及在犹豫期内解除合同可全额退还保险费的规定。",
            "核保意见：体检结果正常，按标准体承保，无需加费，无除外责任，同意签发保险单。",
        ],
    ),
    "change": (
        "保全变更申请书",
        [
            "申请人因联系地址变更，申请将保险合同中的通讯地址变更为新的住所地址，并更新联系电话。",
            "同时申请变更交费账户，原账户已注销，新账户为本人名下储蓄账户，开户行信息随附复印件。",
            "保全受理人员已核对申请人身份证件原件，确认签名与投保时预留签名一致，资料齐全。",
            "本次变更自批单签发之日起生效，不影响保险合同的保险责任和现金价值。",
            "附件：身份证复印件一份，银行卡复印件一份，地址证明一份。",
        ],
    ),
    "claim": (
        "理賠申請書",
        [
            "申請人因被保險人意外受傷住院治療，依據保險合同約定申請給付醫療保險金及住院津貼。",
            "事故經過：被保險人於上班途中騎車摔倒，導致右臂骨折，經醫院診斷需手術治療並住院十二天。",
            "隨附資料包括門診病歷、住院病歷、手術記錄、醫療費用發票原件及費用明細清單。",
            "理賠調查人員已向醫院核實就診記錄，確認事故屬於保險責任範圍，無除外責任情形。",
            "審核意見：醫療費用扣除社會醫療保險已報銷部分後，按合同約定比例給付，同意賠付。",
            "賠款將轉入申請人提供的銀行帳戶，請申請人注意查收並保留相關憑證以備查驗。",
        ],
    ),
    "enrolment": (
        "社会保险参保登记表",
        [
            "参保单位为本市一家商贸有限公司，统一社会信用代码及单位基本信息已在系统中登记核实。",
            "参保人员自本月起参加城镇职工基本养老保险、基本医疗保险、失业保险和工伤保险。",
            "缴费基数按照参保人员上年度月平均工资申报，单位与个人按规定比例分别缴纳社会保险费。",
            "经办机构已审核劳动合同、身份证明及单位营业执照复印件，材料真实有效，予以登记。",
            "参保人员可通过社会保障卡查询个人权益记录，如有异议应在规定期限内提出核查申请。",
        ],
    ),
}


@dataclass(frozen=True)
class SampleItem:
    archive_code: str
    title: str
    text: str  # key of TEXTS
    script: str
    fmt: str  # "tiff", "png", "jpeg", "pdf"
    catalogue_pages: int
    policy_number: str
    policyholder: str
    job_serial: str
    year: str
    stage: str
    retention: str
    security_level: str
    box: str
    remarks: str
    pages: tuple[dict, ...]  # per page: skew, rotate (ccw), blank


ITEMS = (
    SampleItem(
        "BX01-2012-CB-D10-0001",
        "人身保险投保单",
        "application",
        "simp",
        "tiff",
        4,
        "P2012-000123",
        "王建国",
        "ZY20120315001",
        "2012",
        "承保",
        "合同终止后10年",
        "内部",
        "B001",
        "多页TIFF，黑白扫描",
        ({"skew": 3.0}, {"skew": -2.0}, {"skew": 1.5}, {"skew": 0.0}),
    ),
    SampleItem(
        "BX01-2013-BQ-D10-0002",
        "保全变更申请书",
        "change",
        "simp",
        "png",
        2,
        "P2013-004567",
        "李秀英",
        "ZY20130822017",
        "2013",
        "保全",
        "合同终止后10年",
        "内部",
        "B001",
        "第二页倒置扫描，第三页为空白页",
        ({"skew": -1.2}, {"skew": 0.8, "rotate": 180}, {"blank": True}),
    ),
    SampleItem(
        "BX01-2014-LP-D6-0003",
        "理赔申请书",
        "claim",
        "trad",
        "jpeg",
        3,
        "P2014-008910",
        "陳志明",
        "ZY20140506032",
        "2014",
        "理赔",
        "合同终止后6年",
        "秘密",
        "B002",
        "繁体字理赔材料",
        ({"skew": 2.5}, {"skew": -3.5}, {"skew": 0.6}),
    ),
    SampleItem(
        "SB02-2015-CB-D30-0004",
        "社会保险参保登记表",
        "enrolment",
        "simp",
        "pdf",
        3,
        "SB2015-220045",
        "张丽",
        "ZY20151103008",
        "2015",
        "参保",
        "文件形成后6年",
        "公开",
        "B003",
        "扫描仪输出的PDF，目录页数与扫描不符",
        ({"skew": -0.7}, {"skew": 1.8}),
    ),
)


def render_page(
    title: str,
    lines: list[str],
    fields: list[tuple[str, str]],
    *,
    script: str = "simp",
    dpi: int = 300,
    skew: float = 0.0,
    rotate: int = 0,
    blank: bool = False,
    noise: float = 0.0,
    seed: int = 0,
    size_mm: tuple[float, float] = (210, 297),
) -> Image.Image:
    """A grey page (mode L) with a title, a field table and body text, skewed and turned as asked."""
    rng = random.Random(seed)
    width, height = (round(size_mm[0] / 25.4 * dpi), round(size_mm[1] / 25.4 * dpi))
    paper = 238
    page = Image.new("L", (width, height), paper)
    draw = ImageDraw.Draw(page)
    px = dpi / 300
    if not blank:
        body = ImageFont.truetype(FONT, round(48 * px), index=FACE[script])
        head = ImageFont.truetype(FONT_BOLD, round(80 * px), index=FACE[script])
        margin = round(220 * px)
        y = round(300 * px)
        tw = draw.textlength(title, font=head)
        draw.text(((width - tw) / 2, y), title, font=head, fill=30)
        y += round(170 * px)
        for label, value in fields:
            draw.text((margin, y), f"{label}：{value}", font=body, fill=35)
            y += round(78 * px)
        y += round(40 * px)
        usable = width - 2 * margin
        for paragraph in lines:
            row = "　　"
            for ch in paragraph:
                if draw.textlength(row + ch, font=body) > usable:
                    draw.text((margin, y), row, font=body, fill=35)
                    y += round(82 * px)
                    row = ""
                row += ch
            draw.text((margin, y), row, font=body, fill=35)
            y += round(82 * px)
    else:
        # a blank page still has scanner dust
        for _ in range(40):
            x, yy = rng.randrange(width), rng.randrange(height)
            draw.point((x, yy), fill=rng.randrange(120, 200))
    if skew:
        page = page.rotate(skew, resample=Image.BICUBIC, expand=False, fillcolor=paper)
    if rotate:
        page = page.rotate(rotate, expand=True, fillcolor=paper)
    if noise:
        arr = np.asarray(page, dtype=np.float32)
        arr += np.random.default_rng(seed).normal(0, noise, arr.shape)
        page = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))
    return page


def item_fields(item: SampleItem) -> list[tuple[str, str]]:
    zh = item.script == "simp"
    return [
        ("保险合同号" if zh else "保險合同號", item.policy_number),
        ("投保人", item.policyholder),
        ("作业流水号" if zh else "作業流水號", item.job_serial),
    ]


def item_pages(item: SampleItem) -> list[Image.Image]:
    title, paragraphs = TEXTS[item.text]
    pages = []
    for n, spec in enumerate(item.pages):
        # each page gets a different slice of the text so pages differ
        body = paragraphs[n % len(paragraphs) :] + paragraphs[: n % len(paragraphs)]
        pages.append(
            render_page(
                title if n == 0 else f"{title}（续{n}）",
                body,
                item_fields(item) if n == 0 else [],
                script=item.script,
                skew=spec.get("skew", 0.0),
                rotate=spec.get("rotate", 0),
                blank=spec.get("blank", False),
                noise=6.0 if item.fmt == "jpeg" else 0.0,
                seed=n + 1,
            )
        )
    return pages


def write_item(item: SampleItem, batch: Path) -> None:
    folder = batch / item.archive_code
    folder.mkdir(parents=True)
    pages = item_pages(item)
    if item.fmt == "tiff":
        bilevel = [p.point(lambda v: 255 if v > 140 else 0).convert("1") for p in pages]
        bilevel[0].save(
            folder / "0001.tif",
            save_all=True,
            append_images=bilevel[1:],
            compression="group4",
            dpi=(300, 300),
        )
    elif item.fmt == "png":
        for n, p in enumerate(pages, start=1):
            p.save(folder / f"{n:04d}.png", dpi=(300, 300), optimize=True)
    elif item.fmt == "jpeg":
        for n, p in enumerate(pages, start=1):
            p.save(folder / f"{item.archive_code}-{n:04d}.jpg", quality=75, dpi=(300, 300))
    elif item.fmt == "pdf":
        pages[0].save(folder / "scan.pdf", save_all=True, append_images=pages[1:], resolution=300.0)


CATALOGUE_HEADER = [
    "档号",
    "题名",
    "保险合同号",
    "投保人",
    "作业流水号",
    "页数",
    "年度",
    "业务环节",
    "保管期限",
    "密级",
    "盒号",
    "备注",
]


def catalogue_rows(items: tuple[SampleItem, ...] = ITEMS) -> list[list[str]]:
    return [
        [
            i.archive_code,
            i.title,
            i.policy_number,
            i.policyholder,
            i.job_serial,
            str(i.catalogue_pages),
            i.year,
            i.stage,
            i.retention,
            i.security_level,
            i.box,
            i.remarks,
        ]
        for i in items
    ]


def write_catalogue(path: Path, encoding: str = "gbk") -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CATALOGUE_HEADER)
    writer.writerows(catalogue_rows())
    path.write_bytes(buffer.getvalue().encode(encoding))


def main() -> None:
    batch = HERE / "batch"
    if batch.exists():
        shutil.rmtree(batch)
    batch.mkdir()
    for item in ITEMS:
        write_item(item, batch)
    write_catalogue(HERE / "catalogue.csv")
    print(f"wrote {batch} and {HERE / 'catalogue.csv'}")


if __name__ == "__main__":
    main()
