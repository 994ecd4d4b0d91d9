"""Host plugins for MAM2 (Nuke, Blender) and the DCC-free client library `mam2_client`."""
