"""WordNet hierarchy of ImageNet-21K classes (shipped data; see hierarchy.py, build.py)."""
