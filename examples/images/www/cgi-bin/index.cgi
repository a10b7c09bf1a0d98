#!/bin/sh
# helloworld-go's answer, plus the revision (K_REVISION is set by Sluice as by Knative).
printf 'Content-Type: text/plain\r\n\r\n'
echo "Hello ${TARGET:-World}! (revision ${K_REVISION:-unknown})"
