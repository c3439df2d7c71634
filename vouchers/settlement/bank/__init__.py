"""Paying providers: payee bank accounts, bank transfer batches and the bank's result files."""
