"""Personal data found and masked in training text: the ``pii`` cleaning step of ``seektune prepare``.

    data:
      clean: [strip_control, nfkc, {pii: {types: [email, phone]}}]   # run nfkc first: full-width digits

``mask_pii(text, types=...)`` replaces e-mail addresses, IP addresses, Chinese resident ID numbers,
payment card numbers and phone numbers with placeholders (``[EMAIL]``, ``[IP]``, ``[ID_CARD]``,
``[BANK_CARD]``, ``[PHONE]``). ID and card numbers count only when their checksum holds, so order
numbers and other long digit strings stay.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from datetime import date

# Numbers must not run into letters or digits ("LG12345678" is an order number), but may touch Chinese text
# ("手机13812345678"), which is why these use explicit ASCII look-arounds instead of \b.

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,}"
    r"(?![A-Za-z0-9\-])"
)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?<![0-9A-Za-z.]){_OCTET}(?:\.{_OCTET}){{3}}(?![0-9A-Za-z]|\.[0-9])")
_IPV6 = re.compile(
    r"(?<![0-9A-Za-z:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{0,4})(?![0-9A-Za-z:])"
)
_ID_CARD = re.compile(
    r"(?<![0-9A-Za-z])[1-9][0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx]"
    r"(?![0-9A-Za-z])"
)
# Payment cards start with 2-6 (Mastercard 2/5, Amex 3, Visa 4, UnionPay/Discover 6): written solid,
# in groups of four, or Amex's 4-6-5; the Luhn check decides.
_BANK_CARD = re.compile(
    r"(?<![0-9A-Za-z])(?:[2-6][0-9]{12,18}"
    r"|[2-6][0-9]{3}(?P<sep>[ \-])[0-9]{4}(?P=sep)[0-9]{4}(?:(?P=sep)[0-9]{1,4}){1,2}"
    r"|3[47][0-9]{2}(?P<amex>[ \-])[0-9]{6}(?P=amex)[0-9]{5})(?![0-9A-Za-z])"
)
_PHONE = re.compile(
    r"(?<![0-9A-Za-z+])(?:"
    r"(?:\+|00)86[ \-]?1[3-9][0-9][ \-]?[0-9]{4}[ \-]?[0-9]{4}"  # +86 138 1234 5678
    r"|1[3-9][0-9][ \-]?[0-9]{4}[ \-]?[0-9]{4}"  # 13812345678, 138-1234-5678
    r"|(?:\+?1[ .\-]?)?(?:\([2-9][0-9]{2}\)|[2-9][0-9]{2})[ .\-]?[2-9][0-9]{2}[ .\-]?[0-9]{4}"  # (415) 555-0143
    r"|\+[1-9][0-9]{0,2}(?:[ .\-]?(?:\([0-9]{1,4}\)|[0-9]{1,5})){2,6}"  # +44 20 7946 0958
    r"|0[0-9]{2,3}-[2-9][0-9]{6,7}"  # mainland landline 010-62345678
    r")(?![0-9A-Za-z])"
)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
PII_TYPES = ("email", "ip", "id_card", "bank_card", "phone")  # the order they are masked in
PII_PLACEHOLDERS = {"email": "[EMAIL]", "ip": "[IP]", "id_card": "[ID_CARD]", "bank_card": "[BANK_CARD]",
                    "phone": "[PHONE]"}


def id_card_valid(number: str) -> bool:
    """Chinese resident ID: a real birth date and the ISO 7064 MOD 11-2 check character."""
    try:
        date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    total = sum(int(digit) * weight for digit, weight in zip(number[:17], _ID_WEIGHTS))
    return "10X98765432"[total % 11] == number[17].upper()


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _mask_ipv6(match: re.Match[str]) -> str:
    """Only real addresses that hold a digit: "std::cout" and "10:30:45" look similar but are not."""
    candidate = match.group(0)
    if not any(char.isdigit() for char in candidate):
        return candidate
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return candidate
    return PII_PLACEHOLDERS["ip"]


def _mask_card(match: re.Match[str]) -> str:
    digits = re.sub(r"[^0-9]", "", match.group(0))
    return PII_PLACEHOLDERS["bank_card"] if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group(0)


def _mask_phone(match: re.Match[str]) -> str:
    digits = sum(char.isdigit() for char in match.group(0))
    return PII_PLACEHOLDERS["phone"] if 7 <= digits <= 15 else match.group(0)


_PII_MASKS: dict[str, Callable[[str], str]] = {
    "email": lambda text: _EMAIL.sub(PII_PLACEHOLDERS["email"], text),
    "ip": lambda text: _IPV4.sub(PII_PLACEHOLDERS["ip"], _IPV6.sub(_mask_ipv6, text)),
    "id_card": lambda text: _ID_CARD.sub(
        lambda m: PII_PLACEHOLDERS["id_card"] if id_card_valid(m.group(0)) else m.group(0), text),
    "bank_card": lambda text: _BANK_CARD.sub(_mask_card, text),
    "phone": lambda text: _PHONE.sub(_mask_phone, text),
}


def mask_pii(text: str, *, types: Sequence[str] | None = None) -> str:
    """Replace personal data with placeholders ([EMAIL], [IP], [ID_CARD], [BANK_CARD], [PHONE]).

    Masks always run in the order of PII_TYPES whatever order ``types`` lists: e-mails first (they hold digits),
    then IPs, then checksummed ID cards and bank cards, and phones last, so an 18-digit ID is never read as a
    phone number. IDs and cards with a wrong checksum are left as they are. Run ``nfkc`` first so full-width
    digits are seen.
    """
    chosen = PII_TYPES if types is None else [types] if isinstance(types, str) else list(types)
    unknown = [kind for kind in chosen if kind not in PII_TYPES]
    if unknown:
        raise ValueError(f"unknown pii type(s) {unknown}; allowed: {', '.join(PII_TYPES)}")
    for kind in PII_TYPES:
        if kind in chosen:
            text = _PII_MASKS[kind](text)
    return text
