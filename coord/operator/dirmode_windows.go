package operator

// modeBits is false: on Windows every directory reports mode 0777 (ACLs decide who may write), so
// CheckDir cannot judge the data directory by its mode and leaves that to the ACLs.
const modeBits = false
