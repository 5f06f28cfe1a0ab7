"""The ROS 2 side: a ROS-free control core (:mod:`.runner`, :mod:`.safety`) and the rclpy nodes
that serve a policy file to an arm (:mod:`.policy_bridge`) and simulate one (:mod:`.sim_arm`).

Importing this package does not import rclpy; only the node modules do."""
