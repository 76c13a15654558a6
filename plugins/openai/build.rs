//! Build script of the openai plugin: lays out the code every request through it runs together
//! (`hot-code.txt`, see the `stilts-hot-code` crate).

fn main() {
    stilts_hot_code::lay_out(stilts_hot_code::Artifact::Cdylib);
}
