"""pintopic: thematic categories for board-organised images (Pinterest), the study reproduced and beaten."""
__version__ = "0.1.0"
