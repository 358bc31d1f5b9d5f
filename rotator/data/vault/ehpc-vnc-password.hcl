# Password policy "ehpc-vnc" for passwords.rule = "current" (the default): what
# ModifyVisualServicePasswd accepts today (legacy rule: ehpc-vnc-legacy-password.hcl).
# Exactly 6 characters, ASCII letters and digits only, at least one letter and one digit.
#   bao write sys/policies/password/ehpc-vnc policy=@ehpc-vnc-password.hcl
#   bao read -field=password sys/policies/password/ehpc-vnc/generate
length = 6

rule "charset" {
  charset = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
}

rule "charset" {
  charset   = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
  min-chars = 1
}

rule "charset" {
  charset   = "0123456789"
  min-chars = 1
}
