"""Where torch work runs: the device, mixed precision and layout (``device``), and the torchrun world
(``distributed``). Train, eval and prune's fine-tunes share them; they import only torch."""
