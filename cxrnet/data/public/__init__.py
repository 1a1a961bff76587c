"""The public chest X-ray datasets as downloaded, each read into cxrnet's records by its own
reader: NIH ChestX-ray14 (``nih``), CheXpert (``chexpert``), MIMIC-CXR-JPG (``mimic``), the RSNA
Pneumonia Detection Challenge (``rsna``), PadChest (``padchest``) and VinDr-CXR (``vindr``).

A source names one by its format: ``data.sources={nih: {format: nih, root: /data/nih}}``
(``formats``). Each reader reads only the label files (and DICOM headers where the dataset
keeps view, age and sex there) and gives every film its patient, study, view, age, sex, boxes
and the dataset's own split; ``policy`` maps every dataset's labels onto cxrnet's findings and
classes under one rule; ``listing`` turns the films into what the run's task uses.
"""
