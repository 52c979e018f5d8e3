"""Make the helper modules of this folder (contract_model, writers) importable by the tests."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
