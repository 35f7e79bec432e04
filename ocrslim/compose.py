"""Compose ``params.yaml`` from ``conf/`` exactly as ``dvc exp run`` does (Hydra compose API).

``dvc repro`` does not compose (treeverse/dvc#10750), so the composed file is committed; this
writes it after a change to ``conf/`` without running an experiment:

    python -m ocrslim.compose [--out FILE] [override ...]      # e.g. profile=tiny eval.limit=5
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def compose(overrides: list[str] | None = None, config_dir: str | Path = "conf", config_name: str = "config") -> dict:
    """Return the composed config as a plain dict (the schema registered first, as DVC's composition does)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from ocrslim.core.config import register_schemas

    register_schemas()  # what hydra_plugins/ocrslim_schema does when DVC composes
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base=None):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides or []))
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def dump(params: dict) -> str:
    """YAML text in the layout DVC writes (block style, keys in composition order)."""
    return yaml.safe_dump(params, sort_keys=False, default_flow_style=False)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    out = Path("params.yaml")
    if argv[:1] == ["--out"]:
        if len(argv) < 2:
            raise SystemExit("error: --out needs a file name (e.g. --out /tmp/params.yaml).")
        out, argv = Path(argv[1]), argv[2:]
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from ocrslim.core.fsutil import write_text

    try:
        params = compose(argv)
    except (HydraException, OmegaConfBaseException) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(".")
        raise SystemExit(f"error: conf/ with overrides {argv}: {first}. Check the key and value "
                         "(KEY=VALUE, lists as 'KEY=[a,b]').") from None
    write_text(out, dump(params))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
