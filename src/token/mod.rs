//! Access-token validation (TS 33.180 Annex B) and the lab IdMS.
