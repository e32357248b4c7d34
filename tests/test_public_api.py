import icae


def test_public_api():
    for name in ["ICAE", "SimpleLLM", "load_config", "Memory", "build_model", "load_checkpoint", "ConfigError", "Span"]:
        assert hasattr(icae, name), name
    assert set(icae.__all__) <= set(dir(icae))
