"""Entry point of the ``mri-data`` dataparser (kept light: nothing here may import a method config)."""

from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from mri_nerfstudio.nerf.dataparser import MRIDataParserConfig

mri_data = DataParserSpecification(
    config=MRIDataParserConfig(),
    description="MRI subjects (BraTS 2021, NIfTI, NRRD or the embedded MNI152) as 72 posed views",
)
