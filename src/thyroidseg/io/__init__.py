"""Files that thyroidseg writes for people and archives to keep: the HTML review report of
``thyroidseg predict --report`` (`thyroidseg.io.report`), the DICOM Segmentation objects of
``--dicom-seg`` (`thyroidseg.io.dicom_seg`), and the model and command identity both carry
(`thyroidseg.io.provenance`).
"""

__all__: list[str] = []
