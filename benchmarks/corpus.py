"""A large, varied synthetic archive for the search benchmark: items of insurance and social
security paperwork, page by page.

Each page is a document of one of many kinds (投保单, 理赔申请书, 医疗费用收据, 参保登记表...)
with form fields (policyholder and insured names, policy number, ID number, dates, amounts,
hospital, employer, address) and a body: sentences from the project's own sample texts,
business sentences with those fields in them, and free text drawn from jieba's dictionary of
about 350,000 words by their corpus frequencies. So common words (保险, 申请, 合同) are on nearly
every page, as in a real archive, while a name, a policy number or a rare word is on few.
Names follow Faker's zh_CN surname frequencies; every item has its own policy number.

Everything comes from one seed: the same arguments give the same pages.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

FONDS = ("BX01", "BX02", "SB02")
STAGES = {"BX": ("承保", "保全", "理赔", "退保", "续期"), "SB": ("参保", "缴费", "待遇", "稽核")}
RETENTION = ("永久", "30年", "合同终止后10年", "合同终止后6年")
LEVELS = ("公开", "内部", "内部", "内部", "秘密", "机密")

DOCUMENTS = {
    "BX": (
        "个人人身保险投保单",
        "人身保险投保单",
        "健康告知书",
        "核保意见书",
        "保险单",
        "现金价值表",
        "保全变更申请书",
        "受益人变更申请书",
        "理赔申请书",
        "医疗费用收据",
        "住院病历",
        "出院小结",
        "诊断证明书",
        "事故经过说明",
        "理赔调查报告",
        "赔款通知书",
        "退保申请书",
        "授权委托书",
        "身份证复印件",
        "银行账户授权书",
        "续期缴费通知书",
    ),
    "SB": (
        "社会保险参保登记表",
        "参保人员增减表",
        "社会保险费缴纳明细",
        "缴费基数申报表",
        "养老保险待遇核定表",
        "失业保险金申领登记表",
        "工伤认定申请表",
        "生育保险待遇申请表",
        "医疗保险报销审批表",
        "劳动合同",
        "工资发放明细",
        "身份证复印件",
        "稽核通知书",
    ),
}
HOSPITAL_KINDS = ("人民医院", "中心医院", "中医院", "第一人民医院", "妇幼保健院", "骨科医院", "附属医院")
DISEASES = (
    "急性阑尾炎",
    "右臂骨折",
    "肺炎",
    "高血压",
    "糖尿病",
    "冠心病",
    "腰椎间盘突出",
    "胃溃疡",
    "脑梗死",
    "白内障",
    "胆结石",
    "甲状腺结节",
    "慢性支气管炎",
    "踝关节扭伤",
    "乳腺增生",
)
BANKS = ("中国工商银行", "中国建设银行", "中国农业银行", "中国银行", "交通银行", "招商银行", "邮政储蓄银行")
FIELD_SENTENCES = (
    "{name}于{date}因{disease}在{hospital}住院治疗{days}天，共支付医疗费用{amount}元。",
    "投保人{holder}为被保险人{name}投保，保险合同号{policy}，保险金额{amount}元。",
    "申请人{name}身份证号码{id}，联系电话{phone}，现住{address}。",
    "经核实，{name}自{date}起在{company}工作，单位已为其办理社会保险参保登记。",
    "保险费{amount}元已于{date}从{bank}账户扣缴成功。",
    "{hospital}出具的诊断证明书载明：{name}诊断为{disease}，建议休息{days}天。",
    "理赔调查人员于{date}走访{hospital}，核实{name}的就诊记录与病历一致。",
    "本人{holder}确认以上填写内容真实无误，如有虚假愿承担相应法律责任。",
    "{company}为{name}申报的缴费基数为{amount}元，经审核符合规定。",
    "被保险人{name}的受益人变更为{holder}，受益比例为百分之百。",
    "保全受理日期{date}，受理人{clerk}，复核人{clerk2}。",
    "经办人{clerk}于{date}受理{name}提交的申请材料共{days}份。",
)
_CJK_WORD = re.compile(r"^[\u4e00-\u9fff]{1,4}$")


@dataclass(frozen=True)
class SyntheticItem:
    archive_code: str
    title: str
    fields: dict[str, str]
    pages: tuple[str, ...]


@dataclass(frozen=True)
class _Vocabulary:
    words: np.ndarray  # Chinese words of 1-4 characters (object array)
    cumulative: np.ndarray  # their cumulative corpus frequencies


@lru_cache(maxsize=1)
def vocabulary() -> _Vocabulary:
    """jieba's dictionary (word, frequency, part of speech): its Chinese words of 1-4 characters."""
    import jieba

    words: list[str] = []
    weights: list[int] = []
    path = Path(jieba.__file__).parent / "dict.txt"
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 3 and _CJK_WORD.match(parts[0]):
            words.append(parts[0])
            weights.append(int(parts[1]))
    return _Vocabulary(np.asarray(words, dtype=object), np.cumsum(np.asarray(weights, dtype=np.float64)))


def _people() -> tuple[list[str], list[float], list[str]]:
    from faker.providers.person.zh_CN import Provider

    surnames = list(Provider.last_names)
    return surnames, [float(w) for w in Provider.last_names.values()], list(Provider.first_names)


def _places() -> tuple[list[str], list[str], list[str]]:
    from faker.providers.address.zh_CN import Provider

    return list(Provider.provinces), list(Provider.cities), list(Provider.districts)


def _company_words() -> tuple[list[str], list[str]]:
    from faker.providers.company.zh_CN import Provider

    return list(Provider.company_prefixes), list(Provider.company_suffixes)


class Generator:
    """Pages of the synthetic archive; `items(n)` yields items of about 10 pages each."""

    def __init__(self, seed: int = 11, chars: int = 450) -> None:
        self.rng = random.Random(seed)
        self.np = np.random.default_rng(seed)
        self.chars = chars
        self.vocab = vocabulary()
        self.surnames, weights, self.given = _people()
        self.surname_weights = list(itertools.accumulate(weights))
        self.given_single = [g for g in self.given if len(g) == 1]
        self.provinces, self.cities, self.districts = _places()
        self.company_prefixes, self.company_suffixes = _company_words()
        import make_samples  # samples/ is on the path (benchmarks.run puts it there)

        self.sample_sentences = [s for _, (_, ps) in make_samples.TEXTS.items() for s in ps]

    # -- values -----------------------------------------------------------------------------

    def name(self) -> str:
        surname = self.rng.choices(self.surnames, cum_weights=self.surname_weights)[0]
        given = self.rng.choice(self.given)
        if len(given) == 1 and self.rng.random() < 0.6:
            given += self.rng.choice(self.given_single)
        return surname + given

    def date(self, year: int) -> str:
        return f"{year}年{self.rng.randint(1, 12)}月{self.rng.randint(1, 28)}日"

    def hospital(self) -> str:
        return self.rng.choice(self.cities) + self.rng.choice(HOSPITAL_KINDS)

    def company(self) -> str:
        return (
            self.rng.choice(self.cities).removesuffix("市")
            + self.rng.choice(self.company_prefixes)
            + self.rng.choice(("科技", "贸易", "建设", "物流", "食品", "电子", "实业"))
            + self.rng.choice(self.company_suffixes)
        )

    def address(self) -> str:
        return (
            self.rng.choice(self.provinces)
            + self.rng.choice(self.cities)
            + self.rng.choice(self.districts)
            + f"{self.rng.randint(1, 300)}号"
        )

    def free_text(self, chars: int) -> str:
        """About `chars` characters of words drawn by their frequency, in clauses of 2-6 words."""
        count = max(2, chars // 2)
        cumulative = self.vocab.cumulative
        picks = np.searchsorted(cumulative, self.np.random(count) * cumulative[-1])
        words = self.vocab.words[np.minimum(picks, len(cumulative) - 1)].tolist()
        cuts = self.np.integers(2, 7, size=count // 2 + 1).tolist()
        out, at = [], 0
        for cut in cuts:
            if at >= count:
                break
            out.append("".join(words[at : at + cut]) + self.rng.choice("，，。；"))
            at += cut
        return "".join(out)

    def page(self, kind: str, year: int, holder: str, policy: str, company: str) -> str:
        insured = self.name() if self.rng.random() < 0.5 else holder
        slots = {
            "name": insured,
            "holder": holder,
            "policy": policy,
            "date": self.date(year),
            "disease": self.rng.choice(DISEASES),
            "hospital": self.hospital(),
            "days": str(self.rng.randint(2, 30)),
            "amount": f"{self.rng.randint(100, 500000)}.{self.rng.randint(0, 99):02d}",
            "id": f"{self.rng.randint(110000, 659999)}{year - self.rng.randint(18, 70)}"
            f"{self.rng.randint(1, 12):02d}{self.rng.randint(1, 28):02d}{self.rng.randint(0, 9999):04d}",
            "phone": f"1{self.rng.choice('3578')}{self.rng.randint(0, 999999999):09d}",
            "address": self.address(),
            "company": company,
            "bank": self.rng.choice(BANKS),
            "clerk": self.name(),
            "clerk2": self.name(),
        }
        out = [kind, f"保险合同号：{policy}", f"投保人：{holder}", f"被保险人：{insured}", slots["date"]]
        size = sum(len(p) for p in out)
        target = int(self.chars * self.rng.uniform(0.4, 1.6))
        while size < target:
            draw = self.rng.random()
            if draw < 0.25:
                line = self.rng.choice(self.sample_sentences)
            elif draw < 0.5:
                line = self.rng.choice(FIELD_SENTENCES).format(**slots)
            else:
                line = self.free_text(self.rng.randint(30, 120))
            out.append(line)
            size += len(line)
        return "\n".join(out)

    def items(self, pages: int, per_item: int = 10) -> Iterator[SyntheticItem]:
        """`pages` pages in items of `per_item` (the last may be shorter)."""
        made = 0
        serial = 0
        while made < pages:
            serial += 1
            fonds = FONDS[serial % len(FONDS)]
            family = fonds[:2]
            year = 2000 + self.rng.randrange(25)
            stage = self.rng.choice(STAGES[family])
            code = f"{fonds}-{year}-{stage_code(stage)}-D10-{serial:07d}"
            policy = f"P{year}-{serial:07d}"
            holder = self.name()
            company = self.company()
            count = min(per_item, pages - made)
            kinds = DOCUMENTS[family]
            texts = tuple(
                self.page(self.rng.choice(kinds), year, holder, policy, company) for _ in range(count)
            )
            fields = {
                "year": str(year),
                "stage": stage,
                "retention": self.rng.choice(RETENTION),
                "security_level": self.rng.choice(LEVELS),
                "box": f"B{(serial - 1) // 40 + 1:05d}",
                "policy_number": policy,
                "policyholder": holder,
            }
            made += count
            yield SyntheticItem(code, texts[0].split("\n", 1)[0], fields, texts)


def stage_code(stage: str) -> str:
    return {"承保": "CB", "保全": "BQ", "理赔": "LP", "退保": "TB", "续期": "XQ"}.get(stage, "SB")
