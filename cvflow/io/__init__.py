"""File formats: .flo, KITTI 16-bit PNG flow, frames (images), and torch-free checkpoint reading."""
