"""The store's cameras: frames in, member and unknown visits out, nothing biometric kept.

``sources`` reads frames; ``tracker`` follows faces across frames; ``quality`` picks the frames
worth recognising; ``gallery_view`` holds the searchable templates in memory; ``recogniser``
turns a camera's frames into visits; ``visit_log`` keeps visit events and footfall counts;
``service`` runs every camera of the store inside ``loyalnet store serve``.
"""
