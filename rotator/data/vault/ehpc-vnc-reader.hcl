# Policy "ehpc-vnc-reader": for people who fetch VNC passwords, e.g.
#   bao kv get -field=password secret/ehpc/vnc/<ClusterId>
# Reads current and past versions of the VNC secrets and their status (every version is a
# password a cluster really had); nothing under the root credentials, nothing of the rotation in
# flight (the pending path), no writes.
#
# Template: `rotator vault-setup` replaces {kv_mount} and {vnc_path} (see rotator.hcl).

path "{kv_mount}/data/{vnc_path}/*" {
  capabilities = ["read"]
}
path "{kv_mount}/metadata/{vnc_path}" {
  capabilities = ["list"]
}
path "{kv_mount}/metadata/{vnc_path}/*" {
  capabilities = ["read", "list"]
}
