"""The subsidy pool: the programme policy, voucher kinds, the ledger and its checks, funding."""
