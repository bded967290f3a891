package privdir

// modeBits is false: on Windows every directory reports mode 0777 (ACLs decide who may write), so
// Check cannot judge a directory by its mode and leaves that to the ACLs.
const modeBits = false
