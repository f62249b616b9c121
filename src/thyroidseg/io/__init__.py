"""Files in and out: images, masks, DICOM, pixel sizes, CSV, atomic writes, output folders.

- `thyroidseg.io.files`: read images and masks, list a folder's images, write images and
  CSV atomically (re-exported here with the rest of its ``__all__``);
- `thyroidseg.io.folder_loop`: `map_folder`, the loop of every folder command, and
  `FilesFailedError` (re-exported here);
- `thyroidseg.io.outputs`: outputs checked before anything is written, and output folders
  held by one run at a time;
- `thyroidseg.io.dicom`: DICOM frames, cine loops and their pixel sizes;
- `thyroidseg.io.spacing`: the pixel size of a frame and where it comes from;
- `thyroidseg.io.report`, `thyroidseg.io.dicom_seg`, `thyroidseg.io.provenance`: what
  ``predict --report`` and ``--dicom-seg`` write for people and archives, and the model and
  command identity both carry.

Imports no other subpackage: every subpackage may import it.
"""

from thyroidseg.io.files import (
    IMAGE_EXTENSIONS,
    JPEG_MASK_THRESHOLD,
    LOSSY_EXTENSIONS,
    Inputs,
    NotBinaryMaskError,
    atomic_write_bytes,
    check_mask_threshold,
    csv_text,
    image_stem,
    list_images,
    list_inputs,
    read_binary_mask,
    read_format_json,
    read_image,
    write_csv,
    write_image,
)
from thyroidseg.io.folder_loop import FilesFailedError, map_folder

__all__ = [
    "IMAGE_EXTENSIONS",
    "JPEG_MASK_THRESHOLD",
    "LOSSY_EXTENSIONS",
    "FilesFailedError",
    "Inputs",
    "atomic_write_bytes",
    "check_mask_threshold",
    "csv_text",
    "image_stem",
    "list_images",
    "list_inputs",
    "map_folder",
    "read_binary_mask",
    "read_format_json",
    "read_image",
    "write_csv",
    "write_image",
    "NotBinaryMaskError",
]
