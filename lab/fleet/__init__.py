"""lab across several hosts: inventory, plan, Ansible-driven runs, merged results."""
