"""Properties: each stated guarantee of the site, asserted over generated inputs.

A property is a Hypothesis test decorated with :func:`proves`, which names the
fact IDs whose statement it asserts. The site's build finds properties by that
decorator (it reads these files, it does not import them), shows each one under
its guarantee, and fails when a stated guarantee has none. Modules are named
after the pages whose guarantees they prove.
"""


def proves(*fact_ids: str):
    """Mark a test as the property of these facts' statements."""
    def mark(test):
        test.proves = fact_ids
        return test
    return mark
