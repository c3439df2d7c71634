"""What each score of each GB/T 42195-2022 item means, in a line, for the assessor's form.

THIS IS A SUMMARY. It follows the pattern of the standard's appendix B (老年人能力评估表) so
that the assessor sees at a glance which end of the scale is which; the assessor scores by the
standard's full text and the training that goes with it, never by these lines alone.

Higher is always more able. ``SCORE_MEANINGS[code][score]`` is a ``Meaning`` (zh, en), one
for every score from the item's minimum (index 0) to its maximum; a test keeps the lists in
step with the instrument file.
"""

from __future__ import annotations

from typing import NamedTuple


class Meaning(NamedTuple):
    zh: str
    en: str

    def text(self, locale: str) -> str:
        return self.zh if locale.startswith("zh") else self.en


# The common 0-4 pattern of the self-care, mobility and daily-affairs items.
_HELP_0_4 = [
    Meaning("完全依赖他人，且不能配合", "Fully dependent on others"),
    Meaning("主要依靠他人协助，自身能配合", "Needs a lot of help"),
    Meaning("需要他人少量协助，以自身完成为主", "Needs some help"),
    Meaning("在他人指导或提示下完成", "Needs supervision or prompting"),
    Meaning("独立完成，不需要协助", "Independent"),
]

SCORE_MEANINGS: dict[str, list[Meaning]] = {
    # --- B.1 自理能力 Self-care ---
    "eating": [
        Meaning("完全依赖协助进食，或吞咽困难、留置营养管", "Fully dependent, or tube-fed"),
        Meaning("需要大量接触式协助，经常呛咳", "Needs a lot of help; often chokes"),
        Meaning("需要少量接触式协助，偶尔呛咳", "Needs some help; chokes now and then"),
        Meaning("在指导或提示下完成，或独立使用辅具", "Needs prompting, or uses an aid alone"),
        Meaning("独立进食，没有呛咳", "Independent, no choking"),
    ],
    "grooming": _HELP_0_4,
    "bathing": _HELP_0_4,
    "dressing_upper": _HELP_0_4,
    "dressing_lower": _HELP_0_4,
    "bladder": [
        Meaning("完全失禁，或留置导尿管", "Incontinent, or catheterised"),
        Meaning("白天大多不能控制，夜间失禁", "Mostly no control by day; wet at night"),
        Meaning("偶有失禁，需他人少量协助用尿垫", "Occasional accidents; some help with pads"),
        Meaning("白天可控制，夜间较差或自用尿垫", "Controls by day; weaker at night or own pads"),
        Meaning("可自行控制排尿", "Full control"),
    ],
    "bowel": [
        Meaning("完全失禁，或造瘘需他人护理", "Incontinent, or stoma cared for by others"),
        Meaning("经常失禁，需他人大量协助", "Frequent accidents; a lot of help"),
        Meaning("偶有失禁，需他人少量协助", "Occasional accidents; some help"),
        Meaning("偶有便秘或需自行使用辅助用物", "Occasional constipation, or uses aids alone"),
        Meaning("可自行控制排便", "Full control"),
    ],
    "toileting": _HELP_0_4,
    # --- B.2 基础运动能力 Basic mobility ---
    "bed_mobility": _HELP_0_4,
    "bed_chair_transfer": _HELP_0_4,
    "walking": [
        Meaning("完全不能步行", "Cannot walk"),
        Meaning("步行时需要他人大量扶持", "Walks only with a lot of support"),
        Meaning("步行时需要他人少量扶持", "Walks with a little support"),
        Meaning("能走约50米，需监护或用拐杖、助行器", "Walks ~50 m with supervision or an aid"),
        Meaning("独立平地步行约50米，无摔倒风险", "Walks ~50 m alone, no risk of falling"),
    ],
    "stairs": [
        Meaning("主要或完全依靠他人协助", "Mostly or fully dependent on others"),
        Meaning("需要他人协助，以自身完成为主", "Needs some help"),
        Meaning("在他人指导或提示下完成", "Needs supervision or prompting"),
        Meaning("可独立上下楼梯（10～15级台阶）", "Independent (10-15 steps)"),
    ],
    # --- B.3 精神状态 Mental state ---
    "orientation_time": [
        Meaning("无时间观念", "No sense of time"),
        Meaning("只知上午、下午或白天、夜间", "Knows only morning/afternoon or day/night"),
        Meaning("年月日不清，知季节或上下半年", "Knows only the season or half of the year"),
        Meaning("年月日不能全部分清", "Not sure of year, month and day"),
        Meaning("时间观念清楚", "Clear about the date"),
    ],
    "orientation_place": [
        Meaning("不能分辨方位", "Cannot tell directions"),
        Meaning("只能在邻居间串门，不知现住地", "Only next door; does not know where home is"),
        Meaning("不知住址，但知较近位置", "Does not know the address, knows nearby places"),
        Meaning("不能单独外出，但知道住址", "Cannot go out alone but knows the address"),
        Meaning("能在日常生活范围内单独外出", "Goes out alone around the neighbourhood"),
    ],
    "orientation_person": [
        Meaning("不认识任何人（包括自己）", "Recognises no one, not even self"),
        Meaning("只认识自己或极少数同住者", "Recognises only self or very few"),
        Meaning("能认识部分同住亲人或照护者", "Recognises some relatives or carers"),
        Meaning("能认识大部分共同生活的人", "Recognises most people living with them"),
        Meaning("认识同住者，能称呼并知道关系", "Knows everyone at home and how related"),
    ],
    "memory": [
        Meaning("记忆完全紊乱或完全不能回忆", "Memory fully lost"),
        Meaning("重度记忆紊乱（不能回忆远期记忆）", "Severe loss (cannot recall long ago)"),
        Meaning("中度记忆紊乱（不能回忆近期记忆）", "Moderate loss (cannot recall recent events)"),
        Meaning("轻度记忆紊乱（不能回忆即时信息）", "Mild loss (cannot recall just now)"),
        Meaning("记忆能力与年龄相符，能完整回忆", "Normal for age"),
    ],
    "comprehension": [
        Meaning("完全不能理解他人的话", "Cannot understand others"),
        Meaning("理解有严重困难，需大量帮助", "Great difficulty; needs a lot of help"),
        Meaning("理解有困难，需频繁重复或简化", "Difficulty; needs repeating or simplifying"),
        Meaning("能理解，但需要增加时间", "Understands, but needs more time"),
        Meaning("能正常理解他人的话", "Understands normally"),
    ],
    "expression": [
        Meaning("完全不能表达需要", "Cannot express needs"),
        Meaning("表达有严重困难，需大量帮助", "Great difficulty; needs a lot of help"),
        Meaning("表达有困难，需频繁重复或简化", "Difficulty; needs repeating or simplifying"),
        Meaning("能表达需要，但需要增加时间", "Can express needs, but needs more time"),
        Meaning("能正常表达自己的想法", "Expresses self normally"),
    ],
    "aggression": [
        Meaning("近一个月内出现过攻击行为", "Aggressive behaviour in the last month"),
        Meaning("未出现", "None"),
    ],
    "depression": [
        Meaning("近一个月内出现过负性情绪", "Depressive mood in the last month"),
        Meaning("未出现", "None"),
    ],
    "consciousness": [
        Meaning("昏睡或昏迷", "Stupor or coma"),
        Meaning("嗜睡或意识模糊", "Drowsy or confused"),
        Meaning("神志清醒", "Alert"),
    ],
    # --- B.4 感知觉与社会参与 Perception and social participation ---
    "vision": [
        Meaning("只能看到光、颜色和形状，或失明", "Sees only light and shapes, or blind"),
        Meaning("能看清大字或辨认物体，看不清书报", "Sees large print or objects, not newsprint"),
        Meaning("视力正常", "Normal"),
    ],
    "hearing": [
        Meaning("大声慢说才能部分听见，或失聪", "Hears only loud, slow speech, or deaf"),
        Meaning("轻声或2米外听不清", "Misses soft speech or beyond 2 m"),
        Meaning("听力正常", "Normal"),
    ],
    "daily_affairs": [
        Meaning("完全依赖他人进行日常事务", "Fully dependent on others"),
        Meaning("需要大量协助", "Needs a lot of help"),
        Meaning("需要少量协助", "Needs some help"),
        Meaning("需要他人监护或指导", "Needs supervision or prompting"),
        Meaning("能完全独立计划、安排和完成", "Plans and manages alone"),
    ],
    "transport": [
        Meaning("只能在协助下乘车，或完全不能外出", "Only with help by car, or cannot go out"),
        Meaning("有人陪伴可乘公共交通外出", "Public transport with someone along"),
        Meaning("能自己乘出租车，不会乘其他公共交通", "Taxi alone, not other public transport"),
        Meaning("能自己骑车或乘公共交通外出", "Cycles or uses public transport alone"),
    ],
    "social": [
        Meaning("不能与人交往", "Cannot interact with others"),
        Meaning("勉强可与人接触，谈吐不清", "Barely interacts; speech unclear"),
        Meaning("脱离社会，可被动接触", "Withdrawn; responds only when approached"),
        Meaning("能适应单纯环境，主动接触他人", "Copes with simple settings, approaches others"),
        Meaning("参与社会，待人接物恰当", "Takes part in society, behaves appropriately"),
    ],
}


def meanings_for(code: str, locale: str, minimum: int = 0) -> list[tuple[int, str]]:
    """(score, text) pairs from the most able score down, in the reader's language."""
    meanings = SCORE_MEANINGS.get(code, [])
    pairs = [(minimum + index, meaning.text(locale)) for index, meaning in enumerate(meanings)]
    return list(reversed(pairs))
