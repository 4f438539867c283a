//! The seat for bandwidth allocation (what LiveKit's stream allocator does): given each
//! subscriber's estimated downlink and the layers it asked for, pick the layer every
//! subscription gets ([`LayerSelector::target`](super::subscription::LayerSelector)) and
//! pause what does not fit. Empty for now: a subscriber gets the layer it asked for
//! (`update_subscription` quality), or the first layer that brings a keyframe. The
//! media-quality work fills this in; the selector and the keyframe throttle are the
//! parts it drives.
