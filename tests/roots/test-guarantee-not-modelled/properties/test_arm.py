from tests.properties import proves


@proves("ARM64-KEYS")
def test_eight():
    assert 8 == 8
