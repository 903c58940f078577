//! Every `PYOCO_*` setting (placeholder).
