"""X.509 chain checks shared by the Python clients' scripts: with the
`cryptography` package only, nothing of certd's."""


def check_chain(chain, roots):
    """Raises unless each certificate of `chain` (leaf first) is signed by
    the next, and a certificate of `roots` signed the last."""
    for child, issuer in zip(chain, chain[1:]):
        child.verify_directly_issued_by(issuer)
    top = chain[-1]
    if not any(_issued_by(top, root) for root in roots):
        raise Exception("no root of the bundle signed the chain")


def _issued_by(certificate, issuer):
    try:
        certificate.verify_directly_issued_by(issuer)
        return True
    except Exception:
        return False
