//! The page's one stylesheet and one small script, files beside this one compiled into the
//! binary (served by the service itself: no CDN, no build step).

pub const CSS: &str = include_str!("static/app.css");

pub const JS: &str = include_str!("static/app.js");
