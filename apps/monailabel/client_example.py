"""A minimal Python client of the app: list the settings, segment a NIfTI scan, save the label map.

    python apps/monailabel/client_example.py http://127.0.0.1:8000 scan.nii.gz scan_label.nii.gz [--overlap 0]

Needs ``requests``. The live test (``make monailabel-test``) runs this file against its server.
"""

from __future__ import annotations

import argparse
import json
import sys

import requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server")
    parser.add_argument("scan", help="a NIfTI image, uploaded with the request")
    parser.add_argument("out", help="where the label map (.nii.gz) is written")
    parser.add_argument("--overlap", type=float, help="sliding-window overlap (default: the server's)")
    args = parser.parse_args()

    info = requests.get(f"{args.server}/info/", timeout=30).json()
    print("settings and defaults:", info["models"]["atria_cascade"]["config"])
    params = {} if args.overlap is None else {"overlap": args.overlap}
    with open(args.scan, "rb") as scan:
        answer = requests.post(
            f"{args.server}/infer/atria_cascade", params={"output": "image"},
            files={"file": (args.scan, scan)}, data={"params": json.dumps(params)}, timeout=1800,
        )
    if answer.status_code != 200:  # 4xx/503: "detail" is one line naming the file or setting
        print(f"HTTP {answer.status_code}: {answer.json().get('detail', answer.text)}", file=sys.stderr)
        return 1
    with open(args.out, "wb") as out:
        out.write(answer.content)
    print(f"label map written to {args.out} (labels {info['models']['atria_cascade']['labels']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
