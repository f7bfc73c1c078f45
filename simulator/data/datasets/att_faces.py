"""AT&T (ORL) faces: 40 identities x 10 grayscale 92x112 images."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from simulator.data.base import DATASETS, Dataset, ImageData, Split, to_image_data

__all__ = ["ATTFaces"]

_SUBJECT = re.compile(r"s(\d+)")
_NUM_SUBJECTS = 40


def _numeric(path: Path) -> int:
    digits = re.sub(r"\D", "", path.stem)
    return int(digits) if digits else -1


@DATASETS.register("att_faces")
class ATTFaces(Dataset):
    """AT&T Laboratories Cambridge face database (formerly ORL), 400 images.

    Files ``<root>/att_faces/s1 .. s40/*.pgm``; the label of ``sK`` is ``K - 1``, so
    labels follow the identity number, not the lexical folder order (``s10`` < ``s2``).
    Images are 112 high and 92 wide. There is only a ``"train"`` split, and no
    download: the files must be present.
    """

    default_mean: ClassVar[tuple[float, ...]] = (0.4417,)
    default_std: ClassVar[tuple[float, ...]] = (0.1958,)
    downloadable: ClassVar[bool] = False

    def _load(self, split: Split) -> ImageData | None:
        if split != "train":
            return None
        folder = self.root / "att_faces"
        subjects = self._subjects(folder)
        images, labels = [], []
        for number, sub in subjects:
            for f in sorted(sub.glob("*.pgm"), key=_numeric):
                with Image.open(f) as im:
                    images.append(np.asarray(im.convert("L"), dtype=np.uint8))
                labels.append(number - 1)
        if len({im.shape for im in images}) != 1:
            raise ValueError(f"att_faces: images under {folder} differ in size")
        return to_image_data(np.stack(images)[:, None], np.asarray(labels),
                             num_classes=_NUM_SUBJECTS, name=self.name, split=split,
                             classes=tuple(f"s{k}" for k in range(1, 41)))

    def _subjects(self, folder: Path) -> list[tuple[int, Path]]:
        expected = "att_faces/s1 .. att_faces/s40 with *.pgm files"
        if not folder.is_dir():
            raise self.not_found(self.root, expected)
        found = []
        for sub in folder.iterdir():
            match = _SUBJECT.fullmatch(sub.name)
            if sub.is_dir() and match and any(sub.glob("*.pgm")):
                found.append((int(match.group(1)), sub))
        numbers = {n for n, _ in found}
        missing = sorted(set(range(1, _NUM_SUBJECTS + 1)) - numbers)
        if missing:
            raise self.not_found(self.root, f"{expected}; missing or empty: "
                                 f"{', '.join(f's{k}' for k in missing)}")
        if len(numbers) != _NUM_SUBJECTS:
            extra = sorted(numbers - set(range(1, _NUM_SUBJECTS + 1)))
            raise ValueError(f"att_faces: unexpected subject folders under {folder}: "
                             f"{', '.join(f's{k}' for k in extra)} (expected s1..s40)")
        return sorted(found)
