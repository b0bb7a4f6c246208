"""Data: readers (tables, image folders), validation, stratified splits, fingerprints."""

from .dataset import Dataset, Split, stratified_split
from .readers import load_dataset, read_lines

__all__ = ["Dataset", "Split", "load_dataset", "read_lines", "stratified_split"]
