//! stilts-plugin: the versioned C ABI between the stilts host and provider plugins, and the SDK for plugin authors.
