"""Initial camera of nerfstudio's web viewer: outside the brain, looking at it, world +Z up.

viser starts every browser client at (-3, 3, -3) in its three.js frame, 0.52 world units from the
origin once nerfstudio's viser scale (10) is divided out: inside the unit sphere that holds the brain,
so the first image a user sees is a close-up of tissue. nerfstudio 1.1.5 has no setting for the
initial viewer camera and its ``ViewerControl.set_pose`` is not implemented, so this control (found
by the viewer on the model, like any ``ViewerControl``) moves each new client's camera itself.
"""

from __future__ import annotations

import math

import numpy as np
import viser
from nerfstudio.viewer.viewer_elements import ViewerControl


def orbit_position(distance: float, azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """A point at ``distance`` from the origin: [3] world units, azimuth 0 on +Y, counter-clockwise about +Z.

    Same convention as :func:`mri_nerfstudio.views.orbit_poses` (view ``i`` at azimuth ``i * step``).
    """
    azimuth, elevation = math.radians(azimuth_deg), math.radians(elevation_deg)
    return distance * np.array(
        [-math.sin(azimuth) * math.cos(elevation), math.cos(azimuth) * math.cos(elevation), math.sin(elevation)]
    )


def framing_distance(vertical_fov_rad: float, fill: float) -> float:
    """Distance at which the unit sphere spans ``fill`` of a perspective camera's vertical field of view."""
    if not 0.0 < fill < 1.0:
        raise ValueError(f"fill must lie strictly between 0 and 1, got {fill}")
    if not 0.0 < vertical_fov_rad < math.pi:
        raise ValueError(f"vertical_fov_rad must lie strictly between 0 and pi, got {vertical_fov_rad}")
    return 1.0 / math.sin(fill * vertical_fov_rad / 2.0)


class OrbitViewerCamera(ViewerControl):
    """Moves each new viewer client's camera onto the views' orbit, framing the brain, world +Z up.

    Args:
        azimuth_deg: azimuth, degrees (default: half-way between training views 0 and 5 of the orbit).
        elevation_deg: angle above the axial plane, degrees, so the first image shows some depth.
        fill: fraction of the client's vertical field of view spanned by the brain's unit sphere.
    """

    def __init__(self, azimuth_deg: float = 12.5, elevation_deg: float = 20.0, fill: float = 0.75):
        if not 0.0 < fill < 1.0:
            raise ValueError(f"fill must lie strictly between 0 and 1, got {fill}")
        self.azimuth_deg = azimuth_deg
        self.elevation_deg = elevation_deg
        self.fill = fill

    def _setup(self, viewer) -> None:
        super()._setup(viewer)
        self.viser_server.on_client_connect(self.place_camera)

    def place_camera(self, client: viser.ClientHandle) -> None:
        """Put ``client``'s camera where the brain fills :attr:`fill` of its view, looking at the origin."""
        # Imported here, as nerfstudio's ViewerControl.get_camera does: the viewer module takes seconds to
        # import and is loaded anyway whenever a client can connect.
        from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO

        distance = framing_distance(client.camera.fov, self.fill)
        position = orbit_position(distance, self.azimuth_deg, self.elevation_deg) * VISER_NERFSTUDIO_SCALE_RATIO
        with client.atomic():
            client.camera.up_direction = (0.0, 0.0, 1.0)
            client.camera.position = tuple(position)
            client.camera.look_at = (0.0, 0.0, 0.0)
