"""The currencies a flow may be priced in: ISO 4217 codes, lower case as Stripe spells them.

Embedded rather than fetched or installed: the list changes a few times a year (a code is added
when a country reforms its money) and a payment daemon must not accept a different set of
currencies depending on what happens to be installed next to it.

Source: ISO 4217 List One (current currency and funds codes), published 2026-01-01.
Left out on purpose: `xts` (reserved for testing) and `xxx` ("no currency"), which name no money
anyone could pay with. Withdrawn codes (`hrk`, `sll`, `ang`, `zwl`, `cuc`, ...) are not listed.
"""

from __future__ import annotations

_LIST_ONE = """
    aed afn all amd aoa ars aud awg azn bam bbd bdt bhd bif bmd bnd bob bov brl bsd btn bwp byn
    bzd cad cdf che chf chw clf clp cny cop cou crc cup cve czk djf dkk dop dzd egp ern etb eur
    fjd fkp gbp gel ghs gip gmd gnf gtq gyd hkd hnl htg huf idr ils inr iqd irr isk jmd jod jpy
    kes kgs khr kmf kpw krw kwd kyd kzt lak lbp lkr lrd lsl lyd mad mdl mga mkd mmk mnt mop mru
    mur mvr mwk mxn mxv myr mzn nad ngn nio nok npr nzd omr pab pen pgk php pkr pln pyg qar ron
    rsd rub rwf sar sbd scr sdg sek sgd shp sle sos srd ssp stn svc syp szl thb tjs tmt tnd top
    try ttd twd tzs uah ugx usd usn uyi uyu uyw uzs ved ves vnd vuv wst xad xaf xag xau xba xbb
    xbc xbd xcd xcg xdr xof xpd xpf xpt xsu xua yer zar zmw zwg
"""

ISO_4217_CODES: frozenset[str] = frozenset(_LIST_ONE.split())


def is_currency(code: str) -> bool:
    """True for a current ISO 4217 code in lower case (`"eur"`); `"EUR"` and `"xx"` are not."""
    return code in ISO_4217_CODES
