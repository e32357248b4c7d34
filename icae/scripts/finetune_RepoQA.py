"""Earlier name of ``icae.scripts.finetune_repoqa`` (the original tool's name, lowercase); kept so old commands run."""

from icae.scripts import entry
from icae.scripts.finetune_repoqa import main

if __name__ == "__main__":
    entry(main)
