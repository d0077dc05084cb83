//! Golden cases (filled below).
