"""``python -m ocrslim`` — same as the ``ocrslim`` command."""

from ocrslim.cli import entry

if __name__ == "__main__":
    entry()
