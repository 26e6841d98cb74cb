//! The SIP edge: framing, parsing (rsip types stop here), bodies, responses.
