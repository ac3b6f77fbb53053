"""Call-centre sentence templates in English and Korean, for the synthetic corpus.

Customer wording is composed from a *topic statement* and, for emotional wording, an *emotion
frame* around it:

* ``PROBLEMS`` / ``REQUESTS`` -- neutrally worded statements per topic (billing, delivery,
  refund, technical support, cancellation). They are the neutral class's wording and the wording
  of "voice-only" utterances of every class, so the words alone cannot tell those apart.
* ``POSITIVES`` -- neutrally worded good outcomes, used inside happiness / surprise frames.
* ``EMOTION_FRAMES`` -- per emotion, frames with a ``{problem}`` or ``{positive}`` hole, or
  stand-alone emotional sentences.
* ``AGENT_NEUTRAL`` / ``AGENT_EMOTION`` -- the agent's side (neutral, happiness, surprise and
  apologetic sadness only).

Slots ``{product}``, ``{amount}``, ``{date}``, ``{month}``, ``{plan}``, ``{order}``, ``{days}``,
``{count}``, ``{agent}`` are filled at random. Korean particles that depend on the preceding
syllable are written ``{slot|이/가}`` (form after a final consonant / after a vowel) and chosen
for the filled value, including values ending in digits (``48213`` is read 사만 팔천이백십삼).
"""

from __future__ import annotations

import re

import numpy as np

__all__ = [
    "AGENT_EMOTION",
    "AGENT_NEUTRAL",
    "EMOTION_FRAMES",
    "LANGUAGES",
    "POSITIVES",
    "PROBLEMS",
    "REQUESTS",
    "SLOTS",
    "TOPICS",
    "compose",
    "fill_slots",
]

LANGUAGES: tuple[str, ...] = ("en", "ko")
TOPICS: tuple[str, ...] = ("billing", "delivery", "refund", "technical", "cancellation")

Table = dict[str, dict[str, tuple[str, ...]]]

SLOTS: Table = {
    "en": {
        "product": (
            "laptop",
            "wireless headphones",
            "fridge",
            "phone",
            "air purifier",
            "washing machine",
            "tablet",
            "rice cooker",
            "monitor",
            "vacuum cleaner",
        ),
        "amount": ("12 dollars", "32 dollars", "58 dollars", "149 dollars", "79 dollars", "230 dollars"),
        "date": ("March 15th", "May 2nd", "last Friday", "yesterday", "the 10th of this month", "Monday"),
        "month": ("last month", "this month", "March", "October"),
        "plan": ("premium", "basic", "family", "unlimited data", "home internet"),
        "order": ("48213", "30577", "91246", "62810", "15934"),
        "days": ("five", "seven", "ten", "fourteen"),
        "count": ("three", "four", "five", "six"),
        "agent": ("Emma", "Daniel", "Olivia", "James", "Sophie", "Michael"),
    },
    "ko": {
        "product": (
            "노트북",
            "무선 이어폰",
            "냉장고",
            "휴대폰",
            "공기청정기",
            "세탁기",
            "태블릿",
            "전기밥솥",
            "모니터",
            "청소기",
        ),
        "amount": ("12,000원", "32,500원", "58,000원", "149,000원", "7,900원", "230,000원"),
        "date": ("3월 15일", "5월 2일", "지난주 금요일", "어제", "이번 달 10일", "월요일"),
        "month": ("지난달", "이번 달", "3월", "10월"),
        "plan": ("프리미엄", "기본", "가족 결합", "무제한 데이터", "인터넷"),
        "order": ("48213", "30577", "91246", "62810", "15934"),
        "days": ("5", "7", "10", "14"),
        "count": ("세", "네", "다섯", "여섯"),
        "agent": ("김지은", "박서준", "이수진", "최민호", "정하늘", "윤서연"),
    },
}

PROBLEMS: Table = {
    "en": {
        "billing": (
            "I was charged twice for my {plan} plan this month.",
            "The bill for {month} is {amount} more than usual.",
            "There's a charge of {amount} on my account that I don't recognise.",
            "My automatic payment on {date} didn't go through.",
            "There's a late fee of {amount} on my bill.",
        ),
        "delivery": (
            "My {product} was supposed to arrive on {date}, but it hasn't come yet.",
            "The tracking for order {order} hasn't updated in {days} days.",
            "The {product} I received is the wrong model.",
            "The box for my {product} arrived damaged.",
            "Order {order} is marked as delivered, but I never got it.",
        ),
        "refund": (
            "I returned the {product} {days} days ago and I still haven't got my refund.",
            "I was told the refund of {amount} would be back by {date}.",
            "The refund for order {order} was only partly paid.",
            "The refund went to a card I don't use anymore.",
        ),
        "technical": (
            "My internet keeps disconnecting every few minutes.",
            "The {product} won't turn on after the update.",
            "I haven't been able to log in to my account since {date}.",
            "The app shows an error whenever I try to pay.",
            "My {product} stopped connecting to the wifi.",
        ),
        "cancellation": (
            "I asked to cancel my {plan} plan on {date}, but I was still charged.",
            "My cancellation request from {date} still shows as pending.",
            "There's a cancellation fee of {amount} that nobody mentioned.",
            "I cancelled, but the extra services are still being billed.",
        ),
    },
    "ko": {
        "billing": (
            "이번 달 {plan} 요금이 두 번 청구됐어요.",
            "{month} 요금이 평소보다 {amount} 더 나왔어요.",
            "제가 쓴 적 없는 {amount|이/가} 결제돼 있어요.",
            "{date}에 자동이체가 안 됐다고 문자가 왔어요.",
            "요금에 연체료가 {amount} 붙어 있더라고요.",
        ),
        "delivery": (
            "{date}에 오기로 한 {product|이/가} 아직 안 왔어요.",
            "주문번호 {order}번 배송 조회가 {days}일째 그대로예요.",
            "받은 {product|이/가} 주문한 모델이랑 달라요.",
            "{product} 상자가 찌그러진 채로 왔어요.",
            "주문번호 {order}번이 배송 완료로 나오는데 물건을 못 받았어요.",
        ),
        "refund": (
            "{days}일 전에 {product|을/를} 반품했는데 아직 환불이 안 됐어요.",
            "{amount} 환불이 {date}까지 된다고 하셨거든요.",
            "주문번호 {order}번 환불 금액이 일부만 들어왔어요.",
            "환불이 지금은 안 쓰는 카드로 처리됐더라고요.",
        ),
        "technical": (
            "인터넷이 몇 분마다 계속 끊겨요.",
            "업데이트하고 나서 {product|이/가} 안 켜져요.",
            "{date}부터 계정에 로그인이 안 돼요.",
            "앱에서 결제하려고 하면 계속 오류가 나요.",
            "{product|이/가} 와이파이에 연결이 안 돼요.",
        ),
        "cancellation": (
            "{date}에 {plan} 요금제 해지를 신청했는데 요금이 또 나갔어요.",
            "{date}에 낸 해지 신청이 아직도 처리 중으로 나와요.",
            "안내받지 못한 해지 위약금이 {amount} 청구됐어요.",
            "해지했는데 부가서비스 요금이 계속 나와요.",
        ),
    },
}

REQUESTS: Table = {
    "en": {
        "billing": (
            "I'd like to check the balance on my account.",
            "Could you tell me when my next payment is due?",
            "I want to update the card on my account.",
        ),
        "delivery": (
            "I'm calling to check the status of order {order}.",
            "Can I change the delivery address for my {product}?",
        ),
        "refund": (
            "How long does a refund usually take?",
            "I'd like to return the {product} I bought on {date}.",
        ),
        "technical": (
            "I need help setting up my new {product}.",
            "Can you walk me through resetting my password?",
        ),
        "cancellation": (
            "I'd like to cancel my {plan} plan.",
            "What do I need to do to close my account?",
        ),
    },
    "ko": {
        "billing": (
            "제 계정 잔액을 확인하고 싶어요.",
            "다음 결제일이 언제인지 알려주실 수 있나요?",
            "등록된 결제 카드를 변경하고 싶어요.",
        ),
        "delivery": (
            "주문번호 {order}번 배송 상황 좀 확인하려고 전화했어요.",
            "{product} 배송지를 바꿀 수 있을까요?",
        ),
        "refund": (
            "환불은 보통 얼마나 걸리나요?",
            "{date}에 산 {product|을/를} 반품하고 싶어요.",
        ),
        "technical": (
            "새로 산 {product} 설정하는 방법을 알고 싶어요.",
            "비밀번호 재설정하는 방법 좀 알려주세요.",
        ),
        "cancellation": (
            "{plan} 요금제를 해지하고 싶어요.",
            "계정을 탈퇴하려면 어떻게 해야 하나요?",
        ),
    },
}

POSITIVES: Table = {
    "en": {
        "billing": (
            "The extra charge has been taken off my bill.",
            "My bill this month is {amount} lower than I expected.",
        ),
        "delivery": (
            "My {product} arrived a day early.",
            "The package came this morning and everything is there.",
        ),
        "refund": (
            "The refund of {amount} is already in my account.",
            "I got my refund for order {order} today.",
        ),
        "technical": (
            "The internet is working again after the reset.",
            "My {product} is finally connected.",
        ),
        "cancellation": (
            "My old plan was cancelled without any fee.",
            "The cancellation fee was waived.",
        ),
    },
    "ko": {
        "billing": (
            "추가로 나간 요금이 취소됐더라고요.",
            "이번 달 요금이 생각보다 {amount} 적게 나왔어요.",
        ),
        "delivery": (
            "{product|이/가} 하루 일찍 도착했어요.",
            "오늘 아침에 택배가 왔는데 빠진 것 없이 다 왔어요.",
        ),
        "refund": (
            "{amount} 환불이 벌써 들어왔어요.",
            "주문번호 {order}번 환불을 오늘 받았어요.",
        ),
        "technical": (
            "초기화하고 나니까 인터넷이 다시 잘 돼요.",
            "드디어 {product|이/가} 연결됐어요.",
        ),
        "cancellation": (
            "위약금 없이 예전 요금제가 해지됐어요.",
            "해지 위약금을 면제받았어요.",
        ),
    },
}

EMOTION_FRAMES: Table = {
    "en": {
        "anger": (
            "{problem} This is absolutely unacceptable!",
            "Are you kidding me? {problem}",
            "{problem} I'm furious about this.",
            "I've called {count} times already and nobody has fixed it! {problem}",
            "{problem} I want this sorted out right now!",
            "This is ridiculous. {problem} Your service is a joke.",
            "{problem} I am sick and tired of your excuses!",
            "How many times do I have to tell you? {problem}",
        ),
        "sadness": (
            "{problem} I'm really upset about it.",
            "{problem} Honestly, I don't know what to do anymore.",
            "I'm so disappointed. {problem}",
            "{problem} It was meant to be a birthday present for my daughter.",
            "{problem} Money is really tight this month, and this makes it even harder.",
            "{problem} I just feel so let down.",
            "I was really looking forward to this. {problem}",
            "{problem} It's already been such a hard week.",
        ),
        "happiness": (
            "{positive} Thank you so much!",
            "Oh, that's wonderful! {positive}",
            "{positive} You've made my day!",
            "{positive} I'm so happy, thank you for your help.",
            "Great news! {positive}",
            "{positive} That's fantastic, I really appreciate it.",
            "I just wanted to say thank you. {positive}",
        ),
        "fear": (
            "{problem} I'm really worried someone has access to my account.",
            "{problem} I'm scared I'll be charged again.",
            "Please help me, I'm really nervous. {problem}",
            "{problem} What if I lose all my money?",
            "{problem} I'm afraid my card details were stolen.",
            "I'm so anxious about this, I couldn't sleep. {problem}",
            "{problem} I'm worried you'll cut off my service.",
        ),
        "disgust": (
            "{problem} Honestly, that's disgusting.",
            "Ugh. {problem} What a revolting way to treat customers.",
            "{problem} The way your company handles this is appalling.",
            "{problem} Frankly, it makes me sick.",
            "The {product} smelled so foul when I opened it, it was gross.",
            "{problem} I can't stand dealing with this company.",
            "{problem} Just thinking about it makes me feel sick.",
        ),
        "surprise": (
            "What? {problem} How is that even possible?",
            "Wait, really? {positive}",
            "Oh my goodness! {problem} I had no idea!",
            "{positive} Wow, I didn't expect that at all!",
            "No way! {problem}",
            "Seriously? {positive} That was so fast!",
            "{problem} I'm shocked, this has never happened before.",
        ),
    },
    "ko": {
        "anger": (
            "{problem} 정말 화가 나네요.",
            "지금 장난하세요? {problem}",
            "{problem} 이게 말이 됩니까?",
            "벌써 {count} 번째 전화하는 건데 아무도 해결을 안 해 주시네요! {problem}",
            "{problem} 당장 해결해 주세요!",
            "진짜 어이가 없네요. {problem}",
            "{problem} 도대체 일을 어떻게 하시는 거예요?",
            "몇 번을 말해야 알아들으세요? {problem}",
        ),
        "sadness": (
            "{problem} 너무 속상해요.",
            "{problem} 이제 어떻게 해야 할지 모르겠어요.",
            "정말 실망스러워요. {problem}",
            "{problem} 딸아이 생일 선물로 산 거였는데 너무 속상하네요.",
            "{problem} 이번 달은 형편이 정말 빠듯한데 더 힘들어졌어요.",
            "{problem} 너무 서운하고 마음이 안 좋네요.",
            "정말 기다렸던 건데. {problem}",
            "{problem} 요즘 안 그래도 힘든데 눈물이 나려고 해요.",
        ),
        "happiness": (
            "{positive} 정말 감사합니다!",
            "와, 정말 잘됐네요! {positive}",
            "{positive} 덕분에 기분이 너무 좋아요!",
            "{positive} 친절하게 도와주셔서 정말 고마워요.",
            "좋은 소식이에요! {positive}",
            "{positive} 진짜 최고예요, 감사해요!",
            "감사 인사드리려고 전화했어요. {positive}",
        ),
        "fear": (
            "{problem} 누가 제 계정에 접근한 것 같아서 너무 불안해요.",
            "{problem} 또 돈이 빠져나갈까 봐 무서워요.",
            "제발 좀 도와주세요, 너무 떨려요. {problem}",
            "{problem} 혹시 제 돈이 다 사라지면 어떡하죠?",
            "{problem} 카드 정보가 유출된 건 아닐까 걱정돼요.",
            "너무 불안해서 잠을 한숨도 못 잤어요. {problem}",
            "{problem} 서비스가 끊길까 봐 겁나요.",
        ),
        "disgust": (
            "{problem} 정말 역겹네요.",
            "으, {problem} 고객을 이렇게 대하다니 기가 막혀요.",
            "{problem} 이런 식으로 일 처리하는 거 정말 질려요.",
            "{problem} 솔직히 불쾌하기 짝이 없네요.",
            "받은 {product}에서 이상한 냄새가 나서 정말 역겨웠어요.",
            "{problem} 이 회사랑은 상대하기도 싫어요.",
            "{problem} 생각만 해도 진절머리가 나요.",
        ),
        "surprise": (
            "네? {problem} 어떻게 그럴 수가 있죠?",
            "정말요? {positive}",
            "어머, 깜짝이야! {problem} 전혀 몰랐어요.",
            "{positive} 와, 이렇게 빨리 될 줄은 몰랐어요!",
            "말도 안 돼요! {problem}",
            "진짜요? {positive} 벌써요?",
            "{problem} 이런 일은 처음이라 너무 놀랐어요.",
        ),
    },
}

AGENT_NEUTRAL: dict[str, tuple[str, ...]] = {
    "en": (
        "Thank you for calling, my name is {agent}. How can I help you today?",
        "Could you please confirm your order number?",
        "Let me check that for you, one moment please.",
        "I can see the payment from {date} in our system.",
        "I'll transfer you to the billing department.",
        "Your case number is {order}.",
        "Is there anything else I can help you with?",
        "I've updated the details on your account.",
    ),
    "ko": (
        "전화 주셔서 감사합니다. 상담원 {agent}입니다. 무엇을 도와드릴까요?",
        "주문번호 확인 부탁드립니다.",
        "잠시만 기다려 주시면 확인해 드리겠습니다.",
        "{date}에 결제된 내역이 확인됩니다.",
        "요금 담당 부서로 연결해 드리겠습니다.",
        "접수 번호는 {order}번입니다.",
        "더 궁금하신 점 있으실까요?",
        "고객님 정보 변경 처리해 드렸습니다.",
    ),
}

AGENT_EMOTION: Table = {
    "en": {
        "happiness": (
            "Great news, your refund of {amount} has been approved!",
            "I'm happy to tell you the issue has been fixed!",
            "Wonderful, your new {product} will arrive tomorrow!",
            "I'm so glad I could help, have a lovely day!",
            "Good news, I've removed the extra charge from your bill!",
        ),
        "surprise": (
            "Oh, really? That's never happened before!",
            "Wow, I didn't expect that at all!",
            "Oh! The system says the package was delivered to a different city!",
        ),
        "sadness": (
            "I'm so sorry, I know this has been really hard for you.",
            "I'm sorry, unfortunately there's nothing more I can do today.",
            "I'm really sorry to hear that, it sounds awful.",
        ),
    },
    "ko": {
        "happiness": (
            "좋은 소식입니다! {amount} 환불이 승인되었어요!",
            "문제가 해결됐다고 말씀드릴 수 있어서 기쁘네요!",
            "새 {product|이/가} 내일 도착할 예정이에요. 정말 다행이에요!",
            "도움이 되셨다니 저도 너무 기뻐요. 좋은 하루 보내세요!",
            "잘됐네요! 추가 요금은 제가 바로 취소해 드렸어요!",
        ),
        "surprise": (
            "네? 정말요? 그런 경우는 처음 봐요!",
            "어머, 저도 전혀 예상 못 했어요!",
            "어? 택배가 다른 지역으로 배송 완료됐다고 나오네요!",
        ),
        "sadness": (
            "정말 죄송합니다. 많이 힘드셨을 것 같아요.",
            "죄송하지만 오늘은 더 이상 해 드릴 수 있는 게 없네요.",
            "그런 일이 있으셨다니 정말 마음이 아프네요.",
        ),
    },
}

_SLOT_RE = re.compile(r"\{(\w+)(?:\|([^}/]+)/([^}]+))?\}")
_DIGIT_HAS_BATCHIM = {
    "0": 8,
    "1": 8,
    "2": 0,
    "3": 16,
    "4": 0,
    "5": 0,
    "6": 1,
    "7": 8,
    "8": 8,
    "9": 0,
}
"""Final-consonant index (0 = none, 8 = ㄹ) of the Korean reading of a final digit."""


def _final_consonant(word: str) -> int:
    """Jongseong index of the last readable character of ``word`` (0 when it ends in a vowel)."""
    for ch in reversed(word):
        if "가" <= ch <= "힣":
            return (ord(ch) - 0xAC00) % 28
        if ch.isdigit():
            return _DIGIT_HAS_BATCHIM[ch]
        if ch.isalpha():
            return 0
    return 0


def _particle(word: str, after_consonant: str, after_vowel: str) -> str:
    jong = _final_consonant(word)
    if after_consonant == "으로" and jong == 8:  # ㄹ takes 로
        return after_vowel
    return after_consonant if jong else after_vowel


def fill_slots(template: str, language: str, rng: np.random.Generator) -> str:
    """Fill ``{slot}`` / ``{slot|A/B}`` holes; a slot used twice gets the same value."""
    values: dict[str, str] = {}
    slots = SLOTS[language]

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in slots:
            raise KeyError(f"unknown slot {{{name}}} in template {template!r}")
        if name not in values:
            choices = slots[name]
            values[name] = choices[int(rng.integers(len(choices)))]
        value = values[name]
        if m.group(2) is not None:
            value += _particle(value, m.group(2), m.group(3))
        return value

    return _SLOT_RE.sub(sub, template)


def _pick(pool: tuple[str, ...], rng: np.random.Generator) -> str:
    return pool[int(rng.integers(len(pool)))]


def compose(
    language: str,
    role: str,
    topic: str,
    emotion: str,
    emotional_wording: bool,
    rng: np.random.Generator,
) -> str:
    """One filled sentence for a customer or agent turn.

    With ``emotional_wording`` false (or ``emotion == "neutral"``) the wording is neutral: a
    topic problem/request for customers, a neutral service line for agents.
    """
    if role == "agent":
        pool = AGENT_EMOTION[language].get(emotion) if emotional_wording else None
        return fill_slots(_pick(pool or AGENT_NEUTRAL[language], rng), language, rng)
    if not emotional_wording or emotion == "neutral":
        neutral = PROBLEMS[language][topic] + REQUESTS[language][topic]
        return fill_slots(_pick(neutral, rng), language, rng)
    frame = _pick(EMOTION_FRAMES[language][emotion], rng)
    frame = frame.replace("{problem}", _pick(PROBLEMS[language][topic], rng))
    frame = frame.replace("{positive}", _pick(POSITIVES[language][topic], rng))
    return fill_slots(frame, language, rng)
