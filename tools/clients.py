"""The command line the client scripts share (saelens_roundtrip.py, reference_remedies.py): the
python of each real client's virtual environment, and the hidden ``--worker`` by which a script
re-runs itself inside that environment. Imports only the standard library: it is imported there too."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parser(doc: str) -> argparse.ArgumentParser:
    """``--client`` (SAELens' python), ``--sparsify`` (sparsify's) and the hidden ``--worker JOBS_JSON``;
    the caller adds its own options."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--client", type=Path, help="python of the sae-lens environment")
    ap.add_argument("--sparsify", type=Path, help="python of the eai-sparsify environment (optional)")
    ap.add_argument("--worker", metavar="JOBS_JSON", help=argparse.SUPPRESS)
    return ap


def clients(args: argparse.Namespace, prog: str, need_one: bool = False) -> dict[str, Path | None] | None:
    """{"saelens": python or None, "sparsify": python or None}; None after one error line on stderr
    when a named python does not exist (or, with ``need_one``, when none is named)."""
    found = {"saelens": args.client, "sparsify": args.sparsify}
    if need_one and not any(found.values()):
        print(f"{prog}: error: give --client (sae-lens python) and/or --sparsify", file=sys.stderr)
        return None
    for lib, py in found.items():
        if py is not None and not py.exists():
            print(f"{prog}: error: {lib} python {py} does not exist", file=sys.stderr)
            return None
    return found
