# Password policy for passwords.rule = "legacy": the older ModifyVisualServicePasswd rule.
# 8 to 30 characters from at least 3 of upper case, lower case, digits and specials; this policy
# asks for all 4 classes (a superset of "3 of 4") at 8 characters, since VNC authentication only
# uses the first 8 bytes of a password.
#   bao write sys/policies/password/ehpc-vnc policy=@ehpc-vnc-legacy-password.hcl
length = 8

rule "charset" {
  charset   = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
  min-chars = 1
}

rule "charset" {
  charset   = "abcdefghijklmnopqrstuvwxyz"
  min-chars = 1
}

rule "charset" {
  charset   = "0123456789"
  min-chars = 1
}

rule "charset" {
  charset   = "()`~!@#$%^&*-+=|{}[]:;'<>,.?/"
  min-chars = 1
}
