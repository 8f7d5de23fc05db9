#!/bin/bash
# The classic loop from the XenServer how-tos (the "turnOffloadingOff"
# script), kept as the guides give it, so that it runs unchanged against
# the box's `xe` stand-in and can be compared with netoffload side by side
# (docs/demo.md). It sets every ethtool-* key to off on every VIF and PIF,
# or on one VM's VIFs, and needs a VM restart to take effect.
if_modes="rx tx sg tso ufo gso"

if [ "$1" = "ALL" ]; then
    echo -n "This turns offloading off on EVERY VIF and PIF. Sure? (y/n) "
    read answer
    [ "$answer" = "y" ] || exit 1
    for VIF in $(xe vif-list --minimal | sed 's/,/ /g'); do
        for if_mode in ${if_modes}; do
            xe vif-param-set uuid=$VIF other-config:ethtool-${if_mode}="off"
        done
    done
    for PIF in $(xe pif-list --minimal | sed 's/,/ /g'); do
        for if_mode in ${if_modes}; do
            xe pif-param-set uuid=$PIF other-config:ethtool-${if_mode}="off"
        done
    done
else
    VM_UUID=$(xe vm-list name-label="$1" params=uuid --minimal)
    if [ -z "$VM_UUID" ]; then
        echo "no VM named $1"
        exit 1
    fi
    for VIF in $(xe vif-list vm-uuid=$VM_UUID params=uuid --minimal | sed 's/,/ /g'); do
        for if_mode in ${if_modes}; do
            xe vif-param-set uuid=$VIF other-config:ethtool-${if_mode}="off"
        done
    done
fi
echo "done. Restart the VMs for the settings to take effect."
