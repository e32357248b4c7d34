import os

import pytest
import torch

FAMILIES = ["tiny-qwen2", "tiny-qwen3", "tiny-mistral"]


@pytest.fixture(scope="session", autouse=True)
def icae_home(tmp_path_factory):
    """Build the tiny models once per session in a private directory, never in the user's cache."""
    home = tmp_path_factory.mktemp("icae_home")
    os.environ["ICAE_HOME"] = str(home)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub here or in CI: fail fast instead of waiting on the network
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return home


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


def small_config(name="tiny-qwen2", **overrides):
    from icae import load_config

    values = {
        "model_name_or_path": name,
        "fixed_mem_size": 4,
        "mean_compression_rate": 4,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
    }
    values.update(overrides)
    return load_config(None, values)


def make_model(name="tiny-qwen2", model_type="icae", seed=0, **overrides):
    from icae import build_model

    torch.manual_seed(seed)
    model = build_model(small_config(name, model_type=model_type, **overrides))
    # peft initialises LoRA B to zero; randomise it so that tests see a non-trivial adapter.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return model.eval()


TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "import os\nprint(os.getcwd())\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n        self.items.append(x)\n",
]


def pad_batch(rows, side, pad_id):
    """Pad id lists on ``side`` into (ids, attention mask), as a caller of the models might."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        n = len(r)
        where = slice(width - n, width) if side == "left" else slice(0, n)
        ids[i, where] = torch.as_tensor(r)
        mask[i, where] = 1
    return ids, mask


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG file's IHDR chunk; fails on anything that is not a PNG."""
    import struct

    data = open(path, "rb").read(24)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def shipped_stand_ins(tmp_path, monkeypatch):
    """Untrained stand-ins for the shipped compressors (the real ones train for hours), on the demo's base."""
    from icae.models import loading

    for name, rate in (("tiny-icae-4x", 4), ("tiny-icae-8x", 8)):
        cfg = small_config("tiny-qwen2-lm", fixed_mem_size=4, mean_compression_rate=rate, freeze_decoder=False)
        make_model("tiny-qwen2-lm", fixed_mem_size=4, mean_compression_rate=rate,
                   freeze_decoder=False).save_pretrained(tmp_path / name, cfg)
        monkeypatch.setitem(loading.SHIPPED_COMPRESSORS, name, tmp_path / name)
    return tmp_path
