"""A statement's documents: the PDF, the XLSX, the facts they show, the verification page."""
