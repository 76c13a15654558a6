//! Build script of the `stilts` binary: lays out the code every gateway request runs together
//! (`hot-code.txt`, see the `stilts-hot-code` crate).

fn main() {
    stilts_hot_code::lay_out(stilts_hot_code::Artifact::Bin("stilts"));
}
