"""Redeeming a voucher: QR tokens and printed cards, the redemption steps, card payments."""
