import anima


def test_all_is_the_public_surface():
    public = {
        name for name in dir(anima) if not name.startswith("_") and not isinstance(getattr(anima, name), type(anima))
    }
    assert set(anima.__all__) - {"__version__"} == public
