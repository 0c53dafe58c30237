"""Curated TFDV schemas (text protobuf), one per dataset name: `<name>.pbtxt`."""
