"""File formats: .flo, KITTI 16-bit PNG flow, and torch-free checkpoint reading."""
