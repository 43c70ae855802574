//! Tessera's black-box test suite lives in `api/` (one test binary); this library is empty.
